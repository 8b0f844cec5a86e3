//! How an error reaches the user: one line.

/// The one-line message for an error: its causes joined by `: `, without the backtraces
/// candle attaches to its errors when RUST_BACKTRACE is set.
pub fn message(err: &anyhow::Error) -> String {
    fn candle_text(e: &candle_core::Error) -> String {
        match e {
            candle_core::Error::WithBacktrace { inner, .. } => candle_text(inner),
            candle_core::Error::Context { inner, context } => format!("{context}: {}", candle_text(inner)),
            other => other.to_string(),
        }
    }
    let parts: Vec<String> = err
        .chain()
        .map(|c| match c.downcast_ref::<candle_core::Error>() {
            Some(e) => candle_text(e),
            None => c.to_string(),
        })
        .collect();
    let mut msg = parts.join(": ");
    // Any backtrace rendered inside a message starts on a line of its own.
    if let Some(i) = msg.find("\n") {
        msg.truncate(i);
    }
    msg
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn message_is_one_line_without_candle_backtraces() {
        let inner = candle_core::Error::Msg("shape mismatch".into());
        let e = candle_core::Error::WithBacktrace {
            inner: Box::new(inner),
            backtrace: Box::new(std::backtrace::Backtrace::force_capture()),
        };
        let err = anyhow::Error::from(e).context("computing class activation maps");
        assert_eq!(message(&err), "computing class activation maps: shape mismatch");
    }
}
