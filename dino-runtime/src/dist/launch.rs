//! Who started this process: the rank, world size and local rank a launcher puts in the
//! environment (`mpirun` of Open MPI or MPICH, Slurm's `srun`), as torchrun's users find them
//! in `RANK`, `WORLD_SIZE` and `LOCAL_RANK`.
use crate::error::{Error, Result};

/// The program that started the ranks.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Launcher {
    /// No launcher: one process.
    None,
    /// Open MPI's `mpirun`/`mpiexec` (`OMPI_COMM_WORLD_*`).
    OpenMpi,
    /// A PMI launcher: MPICH's or Intel MPI's `mpiexec` (`PMI_RANK`, `PMI_SIZE`).
    Pmi,
    /// Slurm's `srun` (`SLURM_PROCID`, `SLURM_STEP_NUM_TASKS`, `SLURM_LOCALID`).
    Slurm,
}

impl std::fmt::Display for Launcher {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Launcher::None => "no launcher",
            Launcher::OpenMpi => "mpirun (Open MPI)",
            Launcher::Pmi => "mpiexec (PMI)",
            Launcher::Slurm => "srun (Slurm)",
        })
    }
}

/// This process's place in the run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Launch {
    pub launcher: Launcher,
    pub rank: usize,
    pub world: usize,
    /// Rank among the processes of this machine (which GPU to take).
    pub local_rank: usize,
}

impl Launch {
    /// One process, no launcher.
    pub const SINGLE: Launch = Launch { launcher: Launcher::None, rank: 0, world: 1, local_rank: 0 };

    /// Read the launcher's variables from `env` (the process environment in
    /// [`Launch::from_env`]). Open MPI's are preferred, then PMI's, then Slurm's; a variable
    /// that is set but not a number, or a rank outside the world, is an error naming it.
    pub fn detect(env: impl Fn(&str) -> Option<String>) -> Result<Launch> {
        let num = |name: &str| -> Result<Option<usize>> {
            match env(name) {
                None => Ok(None),
                Some(v) => v.trim().parse::<usize>().map(Some).map_err(|_| Error::Config {
                    what: format!("{name}={v}"),
                    why: "a launcher variable that is not a whole number".into(),
                }),
            }
        };
        let found = |launcher, rank: &str, world: &[&str], local: &str| -> Result<Option<Launch>> {
            let mut w = None;
            for name in world {
                if let Some(v) = num(name)? {
                    w = Some((name.to_string(), v));
                    break;
                }
            }
            let (Some(r), Some((wname, w))) = (num(rank)?, w) else { return Ok(None) };
            if w == 0 || r >= w {
                return Err(Error::Config {
                    what: format!("{rank}={r} with {wname}={w}"),
                    why: "the launcher's rank is not inside its world".into(),
                });
            }
            let local_rank = num(local)?.unwrap_or(0);
            Ok(Some(Launch { launcher, rank: r, world: w, local_rank }))
        };
        if let Some(l) =
            found(Launcher::OpenMpi, "OMPI_COMM_WORLD_RANK", &["OMPI_COMM_WORLD_SIZE"], "OMPI_COMM_WORLD_LOCAL_RANK")?
        {
            return Ok(l);
        }
        if let Some(l) = found(Launcher::Pmi, "PMI_RANK", &["PMI_SIZE"], "MPI_LOCALRANKID")? {
            return Ok(l);
        }
        // srun sets the step's task count; a batch script run without srun has only the job's
        if let Some(l) =
            found(Launcher::Slurm, "SLURM_PROCID", &["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"], "SLURM_LOCALID")?
        {
            return Ok(l);
        }
        Ok(Launch::SINGLE)
    }

    /// [`Launch::detect`] on this process's environment.
    pub fn from_env() -> Result<Launch> {
        Launch::detect(|k| std::env::var(k).ok())
    }

    /// Refuse a run whose launcher and MPI disagree (an MPI that does not know the launcher
    /// starts every process as a world of its own, and they would all train alone).
    pub fn check_against(&self, rank: usize, world: usize) -> Result<()> {
        if (rank, world) == (self.rank, self.world) {
            return Ok(());
        }
        let hint = match self.launcher {
            Launcher::Slurm => {
                "start the ranks with `srun --mpi=pmix` (or `mpirun` inside the allocation) so that MPI sees them"
            }
            _ => "start them with the `mpirun` of the MPI this dino was built against (scripts/get-mpi.sh)",
        };
        Err(Error::Config {
            what: format!("the launch ({} says rank {} of {})", self.launcher, self.rank, self.world),
            why: format!("MPI sees rank {rank} of {world}: {hint}"),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn env<'a>(vars: &'a [(&'a str, &'a str)]) -> impl Fn(&str) -> Option<String> + 'a {
        move |k| vars.iter().find(|(n, _)| *n == k).map(|(_, v)| v.to_string())
    }

    #[test]
    fn launchers_are_read_from_their_variables() {
        assert_eq!(Launch::detect(env(&[])).unwrap(), Launch::SINGLE);
        let ompi = [("OMPI_COMM_WORLD_RANK", "1"), ("OMPI_COMM_WORLD_SIZE", "2"), ("OMPI_COMM_WORLD_LOCAL_RANK", "1")];
        assert_eq!(
            Launch::detect(env(&ompi)).unwrap(),
            Launch { launcher: Launcher::OpenMpi, rank: 1, world: 2, local_rank: 1 }
        );
        let srun =
            [("SLURM_PROCID", "5"), ("SLURM_STEP_NUM_TASKS", "8"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1")];
        assert_eq!(
            Launch::detect(env(&srun)).unwrap(),
            Launch { launcher: Launcher::Slurm, rank: 5, world: 8, local_rank: 1 }
        );
        let pmi = [("PMI_RANK", "0"), ("PMI_SIZE", "4")];
        assert_eq!(Launch::detect(env(&pmi)).unwrap().world, 4);
    }

    #[test]
    fn bad_launcher_variables_are_named() {
        let e = Launch::detect(env(&[("OMPI_COMM_WORLD_RANK", "x"), ("OMPI_COMM_WORLD_SIZE", "2")])).unwrap_err();
        assert!(e.to_string().contains("OMPI_COMM_WORLD_RANK=x"), "{e}");
        let e = Launch::detect(env(&[("SLURM_PROCID", "4"), ("SLURM_NTASKS", "4")])).unwrap_err();
        assert!(e.to_string().contains("SLURM_PROCID=4 with SLURM_NTASKS=4"), "{e}");
        let l = Launch { launcher: Launcher::Slurm, rank: 1, world: 2, local_rank: 0 };
        let e = l.check_against(0, 1).unwrap_err().to_string();
        assert!(
            e.contains("rank 1 of 2") && e.contains("MPI sees rank 0 of 1") && e.contains("srun --mpi=pmix"),
            "{e}"
        );
        assert!(l.check_against(1, 2).is_ok());
    }
}
