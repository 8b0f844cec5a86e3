# Shared by scripts/prepare_*.sh (source it; not run on its own). Each function stops the
# script with a message on failure.

# The wsolevaluation commit whose metadata/ (splits, boxes, mask lists) we use.
WSOLEVAL_COMMIT=96f4b88679af41f005824661f47e6fe3628af2aa

die() { echo "error: $*" >&2; exit 1; }

# fetch URL FILE: downloads unless FILE is there already (resumes a partial download).
fetch() {
    [ -s "$2" ] && { echo "have $2"; return; }
    command -v wget >/dev/null || die "wget not found"
    wget -c -O "$2.part" "$1" && mv "$2.part" "$2" || die "download of $1 failed"
}

# check_md5 FILE MD5: the published checksum of FILE.
check_md5() {
    echo "checking md5 of $1"
    got=$(md5sum "$1" | cut -d' ' -f1)
    [ "$got" = "$2" ] || die "$1: md5 $got, expected $2 (damaged or different download; delete it and rerun)"
}

# record_sha256 FILE: for files with no published checksum, the first download's SHA-256
# is written to FILE.sha256 and every later run compares against it.
record_sha256() {
    got=$(sha256sum "$1" | cut -d' ' -f1)
    if [ -f "$1.sha256" ]; then
        [ "$got" = "$(cat "$1.sha256")" ] || die "$1: sha256 $got differs from the recorded $(cat "$1.sha256")"
    else
        echo "$got" > "$1.sha256"
        echo "note: $1 has no published checksum; recorded sha256 $got in $1.sha256"
    fi
}

# wsol_metadata NAME DEST: wsolevaluation's metadata/NAME at the pinned commit.
wsol_metadata() {
    [ -f "$2/test/image_ids.txt" ] && { echo "have $2"; return; }
    command -v git >/dev/null || die "git not found"
    tmp=$(mktemp -d)
    git clone -q https://github.com/clovaai/wsolevaluation "$tmp/w" || die "cannot clone wsolevaluation"
    git -C "$tmp/w" checkout -q "$WSOLEVAL_COMMIT" || die "wsolevaluation commit $WSOLEVAL_COMMIT not found"
    mkdir -p "$2"
    cp -r "$tmp/w/metadata/$1/." "$2/"
    rm -rf "$tmp"
}
