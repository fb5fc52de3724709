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
    /// Processes on this machine, when the launcher says (how many cores each may use).
    pub local_size: Option<usize>,
}

impl Launch {
    /// One process, no launcher.
    pub const SINGLE: Launch = Launch { launcher: Launcher::None, rank: 0, world: 1, local_rank: 0, local_size: None };

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
        let found = |launcher, rank: &str, world: &[&str], local: &str, local_n: &str| -> Result<Option<Launch>> {
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
            let local_size = num(local_n)?.filter(|&n| n > 0);
            Ok(Some(Launch { launcher, rank: r, world: w, local_rank, local_size }))
        };
        if let Some(l) = found(
            Launcher::OpenMpi,
            "OMPI_COMM_WORLD_RANK",
            &["OMPI_COMM_WORLD_SIZE"],
            "OMPI_COMM_WORLD_LOCAL_RANK",
            "OMPI_COMM_WORLD_LOCAL_SIZE",
        )? {
            return Ok(l);
        }
        if let Some(l) = found(Launcher::Pmi, "PMI_RANK", &["PMI_SIZE"], "MPI_LOCALRANKID", "MPI_LOCALNRANKS")? {
            return Ok(l);
        }
        // srun sets the step's task count; a batch script run without srun has only the job's
        if let Some(l) = found(
            Launcher::Slurm,
            "SLURM_PROCID",
            &["SLURM_STEP_NUM_TASKS", "SLURM_NTASKS"],
            "SLURM_LOCALID",
            "SLURM_NTASKS_PER_NODE",
        )? {
            return Ok(l);
        }
        Ok(Launch::SINGLE)
    }

    /// [`Launch::detect`] on this process's environment.
    pub fn from_env() -> Result<Launch> {
        Launch::detect(|k| std::env::var(k).ok())
    }

    /// Worker threads for this rank when none are asked for: the machine's cores shared by the
    /// ranks on it (torchrun sets `OMP_NUM_THREADS=1` for the same reason: N ranks with all
    /// cores each oversubscribe the machine N times). `None`: one rank, all cores.
    pub fn default_threads(&self, cores: usize) -> Option<usize> {
        (self.world > 1).then(|| (cores / self.local_size.unwrap_or(1).max(1)).max(1))
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
            what: "launch".into(),
            why: format!(
                "{} says this is rank {} of {}, MPI sees rank {rank} of {world}: {hint}",
                self.launcher, self.rank, self.world
            ),
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
        let mut with_size = ompi.to_vec();
        with_size.push(("OMPI_COMM_WORLD_LOCAL_SIZE", "2"));
        let l = Launch::detect(env(&with_size)).unwrap();
        assert_eq!((l.local_size, l.default_threads(16)), (Some(2), Some(8)));
        assert_eq!(Launch::SINGLE.default_threads(16), None);
        assert_eq!(
            Launch::detect(env(&ompi)).unwrap(),
            Launch { launcher: Launcher::OpenMpi, rank: 1, world: 2, local_rank: 1, local_size: None }
        );
        let srun =
            [("SLURM_PROCID", "5"), ("SLURM_STEP_NUM_TASKS", "8"), ("SLURM_NTASKS", "16"), ("SLURM_LOCALID", "1")];
        assert_eq!(
            Launch::detect(env(&srun)).unwrap(),
            Launch { launcher: Launcher::Slurm, rank: 5, world: 8, local_rank: 1, local_size: None }
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
        let l = Launch { launcher: Launcher::Slurm, rank: 1, world: 2, local_rank: 0, local_size: None };
        let e = l.check_against(0, 1).unwrap_err().to_string();
        assert!(
            e.contains("rank 1 of 2") && e.contains("MPI sees rank 0 of 1") && e.contains("srun --mpi=pmix"),
            "{e}"
        );
        assert!(l.check_against(1, 2).is_ok());
    }
}
