//! The MPI engine (cargo feature `mpi`, the rsmpi crate over the system's Open MPI or
//! MPICH): CPU tensors, any number of machines, started by `mpirun` or `srun`.
//!
//! Errors: MPI's default handler (`MPI_ERRORS_ARE_FATAL`) ends the whole job on a failed
//! call, and a rank that dies (a crash, kill -9) makes the launcher end the others, so a
//! collective never waits forever on a rank that is gone.

use anyhow::{bail, Result};
use mpi::collective::SystemOperation;
use mpi::environment::Universe;
use mpi::topology::SimpleCommunicator;
use mpi::traits::*;
use mpi::Threading;

use super::Collective;

pub struct Mpi {
    world: SimpleCommunicator,
    rank: usize,
    size: usize,
    /// Dropped last: `MPI_Finalize`.
    _universe: Universe,
}

impl Mpi {
    pub fn init() -> Result<Box<dyn Collective>> {
        // Only the main thread calls MPI (the loader's and rayon's threads never do).
        let Some((universe, _)) = mpi::initialize_with_threading(Threading::Funneled) else {
            bail!("MPI was already initialized in this process");
        };
        let world = universe.world();
        let (rank, size) = (world.rank() as usize, world.size() as usize);
        Ok(Box::new(Mpi { world, rank, size, _universe: universe }))
    }
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
