//! The MPI engine (cargo feature `mpi`, the rsmpi crate over the system's Open MPI or
//! MPICH): CPU tensors, any number of machines, started by `mpirun` or `srun`.
//!
//! Errors: MPI's default handler (`MPI_ERRORS_ARE_FATAL`) ends the whole job on a failed
//! call, and a rank that dies (a crash, kill -9) makes the launcher end the others, so a
//! collective never waits forever on a rank that is gone; one that lives but hangs is
//! caught by the watchdog of [`super::Watched`] (`WSOL_COLLECTIVE_TIMEOUT`).

use anyhow::{bail, Result};
use mpi::collective::SystemOperation;
use mpi::datatype::PartitionMut;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::{Count, Threading};

use super::Collective;

pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Dropped last: `MPI_Finalize`.
    _universe: Universe,
}

impl Mpi {
    /// The world communicator, and whether another thread may end the job with
    /// [`abort_job`] while the main thread waits in a collective (MPI_THREAD_MULTIPLE).
    pub fn init() -> Result<(Box<dyn Collective>, bool)> {
        // The main thread makes every collective; the collective-timeout watchdog may call
        // MPI_Abort from its own thread, which MPI allows under MPI_THREAD_MULTIPLE.
        let Some((universe, provided)) = mpi::initialize_with_threading(Threading::Multiple) else {
            bail!("MPI was already initialized in this process");
        };
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok((Box::new(Mpi { world, rank, size, _universe: universe }), provided == Threading::Multiple))
    }
}

/// Ends every rank of the job from any thread (MPI_THREAD_MULTIPLE) with MPI_Abort; where
/// MPI gave fewer thread rights, exits this process, which the launcher answers by
/// ending the others (a rank that exits without MPI_Finalize).
pub fn abort_job(code: i32, multiple: bool) -> ! {
    if multiple {
        // SAFETY: MPI is initialized with MPI_THREAD_MULTIPLE (`multiple`), so any thread
        // may call MPI_Abort; RSMPI_COMM_WORLD is the world communicator constant.
        unsafe {
            mpi::ffi::MPI_Abort(mpi::ffi::RSMPI_COMM_WORLD, code);
        }
    }
    std::process::exit(code)
}

impl Collective for Mpi {
    fn rank(&self) -> usize {
        self.rank
    }

    fn world(&self) -> usize {
        self.size
    }

    fn engine(&self) -> &'static str {
        "mpi"
    }

    fn all_reduce_sum_f32(&self, buf: &mut [f32]) -> Result<()> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_u64(&self, buf: &mut [u64]) -> Result<()> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn all_reduce_sum_f64(&self, buf: &mut [f64]) -> Result<()> {
        let send = buf.to_vec();
        self.world.all_reduce_into(&send[..], buf, SystemOperation::sum());
        Ok(())
    }

    fn gather_bytes(&self, mine: &[u8]) -> Result<Option<Vec<Vec<u8>>>> {
        let root = self.world.process_at_rank(0);
        let Ok(len) = Count::try_from(mine.len()) else {
            bail!("gathering {} bytes from rank {}: more than MPI's 2 GiB per message", mine.len(), self.rank);
        };
        // An empty slice's address is Rust's dangling 0x1, which is Open MPI's MPI_IN_PLACE:
        // send nothing from real memory instead.
        let pad = [0u8; 1];
        let mine = if mine.is_empty() { &pad[..0] } else { mine };
        if self.rank != 0 {
            root.gather_into(&len);
            root.gather_varcount_into(mine);
            return Ok(None);
        }
        let mut counts: Vec<Count> = vec![0; self.size];
        root.gather_into_root(&len, &mut counts[..]);
        let displs: Vec<Count> = counts
            .iter()
            .scan(0 as Count, |at, &c| {
                let d = *at;
                *at = at.saturating_add(c);
                Some(d)
            })
            .collect();
        let total: usize = counts.iter().map(|&c| c as usize).sum();
        if total > Count::MAX as usize {
            bail!("gathering {total} bytes on rank 0: more than MPI's 2 GiB per message");
        }
        // At least one byte, so the receive buffer is real memory too (see above).
        let mut buf = vec![0u8; total.max(1)];
        {
            let mut parts = PartitionMut::new(&mut buf[..], &counts[..], &displs[..]);
            root.gather_varcount_into_root(mine, &mut parts);
        }
        let mut out = Vec::with_capacity(self.size);
        for (&c, &d) in counts.iter().zip(&displs) {
            out.push(buf[d as usize..d as usize + c as usize].to_vec());
        }
        Ok(Some(out))
    }

    fn broadcast_f32(&self, buf: &mut [f32]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    fn broadcast_u64(&self, buf: &mut [u64]) -> Result<()> {
        self.world.process_at_rank(0).broadcast_into(buf);
        Ok(())
    }

    fn barrier(&self) -> Result<()> {
        self.world.barrier();
        Ok(())
    }

    fn abort(&self, code: i32) -> ! {
        self.world.abort(code)
    }
}
