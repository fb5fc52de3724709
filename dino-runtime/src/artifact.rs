//! Compiled artifacts: compiled programs in one file that runs with no graph building, no
//! passes and no kernel compiler (DESIGN §4).
//!
//! ```text
//!  offset 0   "DINOART\n"                           magic
//!         8   u32 LE  header length H
//!        12   header  (JSON, H bytes)               format, program version, target,
//!                                                   identity (model, graph, batch, ...),
//!                                                   section table: name, offset, len, CRC-32
//!    12 + H   u32 LE  CRC-32 of the header
//!    16 + H   sections, back to back                `<program>.plan` (wire.rs), `<program>.handles`
//!                                                   (JSON), a backend's own (`<program>.cubin`, ...)
//! ```
//!
//! Reading checks, before anything is decoded: the magic, the header's checksum and format,
//! that the sections tile the rest of the file exactly (a truncated file or one with bytes
//! appended is named as such), and every section's checksum. A plan section is then validated
//! by [`Plan::from_bytes`]. What the file was built for ([`Identity`]) is compared with what a
//! run asks for by [`Artifact::require`], which names the first field that differs.
//!
//! A program is a plan plus what the code that built its graph needs to drive it without the
//! graph: that code's node handles (`handles`, serialized by it), the inputs the graph keeps
//! between runs, and the constants the graph was built with (inputs that already held a value
//! when the program was captured: position-embedding resampling matrices, ...).
//! [`CompiledProgram::shell`] gives the empty graph such code then runs on: its tensor store
//! with the constants in it, dynamic dims and kept inputs, and no nodes.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use luminal::prelude::{Graph, NodeIndex};
use serde::{Deserialize, Serialize};

use crate::backend::plan::{Loc, Plan, Planner};
use crate::error::{Error, Result};

/// The format this version writes and reads.
pub const FORMAT: &str = "dino-artifact/1";
/// The program whose executors the plans are for: a plan is made by one version's passes and
/// run by the same version's executors.
pub const PROGRAM: &str = concat!("dino-runtime ", env!("CARGO_PKG_VERSION"));
const MAGIC: &[u8; 8] = b"DINOART\n";
/// The largest artifact read (bytes).
const MAX_BYTES: u64 = 4 << 30;

/// What a program runs on.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Target {
    /// Any x86-64 or other CPU this binary runs on (the plan is interpreted).
    Cpu,
    /// NVIDIA GPUs of one architecture (`sm_90`): kernels as CUBIN for it, PTX for newer ones.
    Cuda { arch: String },
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Cpu => f.write_str("cpu"),
            Target::Cuda { arch } => write!(f, "cuda {arch}"),
        }
    }
}

/// What an artifact was built for: the target and whatever the building code records about
/// its graph (model, graph kind, batch, precision, the declaration's config, ...), compared
/// field by field with what a run asks for.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Identity {
    pub target: Target,
    pub fields: BTreeMap<String, serde_json::Value>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Section {
    name: String,
    offset: u64,
    len: u64,
    crc32: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Header {
    format: String,
    program: String,
    identity: Identity,
    sections: Vec<Section>,
}

/// A compiled program: a plan, the inputs its graph keeps, and its builder's handles.
pub struct CompiledProgram {
    pub plan: Plan,
    /// Inputs the graph keeps between runs (weights, optimizer state, carried values).
    pub keep: Vec<NodeIndex>,
    /// The building code's node handles, as it serialized them.
    pub handles: serde_json::Value,
    /// Inputs that held a value when the program was captured, with that value.
    pub constants: Vec<(NodeIndex, Vec<f32>)>,
    /// What the target's backend runs beside the plan (CUDA: every kernel as CUBIN and PTX),
    /// opaque here; none for the CPU, which interprets the plan.
    pub code: Option<Vec<u8>>,
}

#[derive(Serialize, Deserialize)]
struct ProgramMeta {
    keep: Vec<NodeIndex>,
    handles: serde_json::Value,
}

/// The encoding of constants; decoding claims at most `limit` bytes.
fn bin(limit: u64) -> impl bincode::Options {
    use bincode::Options;
    bincode::DefaultOptions::new().with_fixint_encoding().with_limit(limit)
}

impl CompiledProgram {
    /// The program of the compiled graph `cx` at its current dynamic dims. Capture it before
    /// setting weights or data: every input that holds a value now is stored as a constant.
    pub fn capture(cx: &Graph, handles: serde_json::Value) -> Result<CompiledProgram> {
        let plan = Planner::new(cx).plan(cx)?;
        let keep = plan.inputs().map(|(s, _)| s.node).filter(|n| cx.no_delete.contains(n)).collect();
        let constants = plan
            .inputs()
            .filter_map(|(s, _)| crate::graph::data::get(cx, s.node).map(|v| (s.node, v.to_vec())))
            .collect();
        Ok(CompiledProgram { plan, keep, handles, constants, code: None })
    }

    /// The graph this program runs on: no nodes, the plan's dynamic dims, the kept inputs
    /// marked as kept. Set its inputs as on the graph it was compiled from.
    pub fn shell(&self) -> Box<Graph> {
        let mut cx = Box::new(Graph::new());
        for &(d, v) in &self.plan.dyn_dims {
            cx.set_dyn_dim(d, v);
        }
        cx.no_delete.extend(self.keep.iter().copied());
        for (n, v) in &self.constants {
            crate::graph::data::set(&mut cx, *n, v.clone());
        }
        cx
    }
}

/// An artifact in memory: identity and sections.
pub struct Artifact {
    pub identity: Identity,
    /// The version of the program that wrote it.
    pub program: String,
    sections: Vec<(String, Vec<u8>)>,
    path: PathBuf,
}

fn crc(b: &[u8]) -> u32 {
    let mut h = crc32fast::Hasher::new();
    h.update(b);
    h.finalize()
}

impl Artifact {
    /// An empty artifact for `identity`, to be written by this program.
    pub fn new(identity: Identity) -> Artifact {
        Artifact { identity, program: PROGRAM.to_string(), sections: vec![], path: PathBuf::new() }
    }

    /// Add (or replace) a section.
    pub fn add(&mut self, name: &str, bytes: Vec<u8>) {
        self.sections.retain(|s| s.0 != name);
        self.sections.push((name.to_string(), bytes));
    }

    /// Add the program `name` (`train-step`, `forward`): its plan and its metadata.
    pub fn add_program(&mut self, name: &str, p: &CompiledProgram, cx: &Graph) -> Result<()> {
        let describe = |s: &crate::backend::plan::Step| {
            cx.graph.node_weight(s.node).map(|o| format!("{o:?}")).unwrap_or_else(|| format!("node {}", s.node.index()))
        };
        let plan = p.plan.to_bytes(describe).map_err(|why| Error::Backend(format!("program `{name}`: {why}")))?;
        let meta = serde_json::to_vec(&ProgramMeta { keep: p.keep.clone(), handles: p.handles.clone() })
            .map_err(|e| Error::Backend(format!("program `{name}`: {e}")))?;
        use bincode::Options;
        let constants = bin(MAX_BYTES)
            .serialize(&p.constants.iter().map(|(n, v)| (n.index() as u32, v)).collect::<Vec<_>>())
            .map_err(|e| Error::Backend(format!("program `{name}` constants: {e}")))?;
        self.add(&format!("{name}.plan"), plan);
        self.add(&format!("{name}.meta"), meta);
        self.add(&format!("{name}.constants"), constants);
        if let Some(code) = &p.code {
            self.add(&format!("{name}.code"), code.clone());
        }
        Ok(())
    }

    /// The names of the sections.
    pub fn section_names(&self) -> Vec<&str> {
        self.sections.iter().map(|s| s.0.as_str()).collect()
    }

    /// A section's bytes (checked when the file was read).
    pub fn section(&self, name: &str) -> Result<&[u8]> {
        self.sections.iter().find(|s| s.0 == name).map(|s| s.1.as_slice()).ok_or_else(|| Error::Format {
            path: self.path.clone(),
            why: format!(
                "no section `{name}` (it holds {}): was it compiled for another graph?",
                self.section_names().join(", ")
            ),
        })
    }

    /// The program `name`, its plan validated.
    pub fn program(&self, name: &str) -> Result<CompiledProgram> {
        let bad = |why: String| Error::Format { path: self.path.clone(), why: format!("program `{name}`: {why}") };
        let plan = Plan::from_bytes(self.section(&format!("{name}.plan"))?).map_err(bad)?;
        let meta: ProgramMeta =
            serde_json::from_slice(self.section(&format!("{name}.meta"))?).map_err(|e| bad(e.to_string()))?;
        use bincode::Options;
        let section = self.section(&format!("{name}.constants"))?;
        let constants: Vec<(u32, Vec<f32>)> =
            bin(section.len() as u64).deserialize(section).map_err(|e| bad(e.to_string()))?;
        let inputs: Vec<NodeIndex> = plan.inputs().map(|(s, _)| s.node).collect();
        if let Some(k) = meta.keep.iter().find(|k| !inputs.contains(k)) {
            return Err(bad(format!("keeps node {} which is not an input", k.index())));
        }
        let constants: Vec<(NodeIndex, Vec<f32>)> =
            constants.into_iter().map(|(n, v)| (NodeIndex::new(n as usize), v)).collect();
        for (n, v) in &constants {
            match inputs.iter().position(|i| i == n) {
                Some(k) if v.len() >= plan.input_extent[k] => {}
                Some(k) => {
                    return Err(bad(format!(
                        "constant of node {} holds {} values, its views read {}",
                        n.index(),
                        v.len(),
                        plan.input_extent[k]
                    )))
                }
                None => return Err(bad(format!("a constant for node {}, which is not an input", n.index()))),
            }
        }
        let mut nodes: Vec<NodeIndex> =
            plan.steps.iter().filter(|s| matches!(s.loc, Loc::Input(_) | Loc::Kept(_))).map(|s| s.node).collect();
        nodes.sort();
        if nodes.windows(2).any(|w| w[0] == w[1]) {
            return Err(bad("two inputs or kept outputs share a node".into()));
        }
        // a backend's code: required where the target has one (what it holds is the backend's
        // to check against the plan)
        let code = match self.identity.target {
            Target::Cpu => None,
            Target::Cuda { .. } => Some(self.section(&format!("{name}.code"))?.to_vec()),
        };
        Ok(CompiledProgram { plan, keep: meta.keep, handles: meta.handles, constants, code })
    }

    /// Refuse an artifact built for something else than `asked`, naming the first field that
    /// differs (the target first, then the program version, then the fields in order).
    pub fn require(&self, asked: &Identity) -> Result<()> {
        let differs = |what: &str, built: String, asked: String| Error::ArtifactMismatch {
            path: self.path.clone(),
            what: what.to_string(),
            built,
            asked,
        };
        if self.identity.target != asked.target {
            return Err(differs("target", self.identity.target.to_string(), asked.target.to_string()));
        }
        if self.program != PROGRAM {
            return Err(differs("program version", self.program.clone(), PROGRAM.to_string()));
        }
        let show = |v: Option<&serde_json::Value>| v.map(|v| v.to_string()).unwrap_or_else(|| "(none)".into());
        let keys: std::collections::BTreeSet<&String> =
            self.identity.fields.keys().chain(asked.fields.keys()).collect();
        for k in keys {
            let (b, a) = (self.identity.fields.get(k), asked.fields.get(k));
            if b != a {
                return Err(differs(k, show(b), show(a)));
            }
        }
        Ok(())
    }

    /// Write to `path` (temp + rename).
    pub fn write(&self, path: &Path) -> Result<()> {
        let mut sections = vec![];
        let mut offset = 0u64;
        for (name, b) in &self.sections {
            sections.push(Section { name: name.clone(), offset, len: b.len() as u64, crc32: crc(b) });
            offset += b.len() as u64;
        }
        let header =
            Header { format: FORMAT.into(), program: self.program.clone(), identity: self.identity.clone(), sections };
        let h = serde_json::to_vec(&header).map_err(|e| Error::Backend(format!("artifact header: {e}")))?;
        let mut out = Vec::with_capacity(16 + h.len() + offset as usize);
        out.extend_from_slice(MAGIC);
        out.extend_from_slice(&(h.len() as u32).to_le_bytes());
        out.extend_from_slice(&h);
        out.extend_from_slice(&crc(&h).to_le_bytes());
        for (_, b) in &self.sections {
            out.extend_from_slice(b);
        }
        crate::files::write_atomic(path, &out)
    }

    /// Read and check `path` (see the module documentation).
    pub fn read(path: &Path) -> Result<Artifact> {
        let io = |e: std::io::Error| Error::Io { path: path.to_path_buf(), source: e };
        let size = std::fs::metadata(path).map_err(io)?.len();
        if size > MAX_BYTES {
            return Err(Error::Format { path: path.into(), why: format!("{size} bytes: larger than any artifact") });
        }
        Artifact::parse(&std::fs::read(path).map_err(io)?, path)
    }

    /// Parse an artifact's bytes (`path` names it in errors).
    pub fn parse(bytes: &[u8], path: &Path) -> Result<Artifact> {
        let bad = |why: String| Error::Format { path: path.to_path_buf(), why };
        if bytes.len() < 12 || &bytes[..8] != MAGIC {
            return Err(bad("not a dino artifact (`dino compile` writes them)".into()));
        }
        let hlen = u32::from_le_bytes(bytes[8..12].try_into().expect("4 bytes")) as usize;
        let body = 16usize.checked_add(hlen).filter(|&e| e <= bytes.len()).ok_or_else(|| {
            bad(format!("truncated: the header needs {} bytes, the file has {}", 16 + hlen as u64, bytes.len()))
        })?;
        let h = &bytes[12..12 + hlen];
        let stored = u32::from_le_bytes(bytes[12 + hlen..body].try_into().expect("4 bytes"));
        if crc(h) != stored {
            return Err(bad("the header's checksum does not match: the file was altered or damaged".into()));
        }
        let header: Header = serde_json::from_slice(h).map_err(|e| bad(format!("header: {e}")))?;
        if header.format != FORMAT {
            return Err(bad(format!("format `{}`, this program reads `{FORMAT}`", header.format)));
        }
        let rest = (bytes.len() - body) as u64;
        let mut at = 0u64;
        let mut sections = vec![];
        for s in &header.sections {
            let end = s.offset.checked_add(s.len).filter(|_| s.offset == at);
            let end = match end {
                Some(e) if e <= rest => e,
                Some(e) => return Err(bad(format!("truncated: section `{}` ends at byte {e} of {rest}", s.name))),
                None => return Err(bad(format!("section `{}` is not where the table puts it", s.name))),
            };
            let b = &bytes[body + s.offset as usize..body + end as usize];
            if crc(b) != s.crc32 {
                return Err(bad(format!("section `{}` fails its checksum: the file was altered or damaged", s.name)));
            }
            sections.push((s.name.clone(), b.to_vec()));
            at = end;
        }
        if at != rest {
            return Err(bad(format!("{} bytes after the last section", rest - at)));
        }
        Ok(Artifact { identity: header.identity, program: header.program, sections, path: path.to_path_buf() })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Artifact {
        let mut fields = BTreeMap::new();
        fields.insert("model".to_string(), serde_json::json!("fmnist-small"));
        fields.insert("batch".to_string(), serde_json::json!(8));
        let mut a = Artifact::new(Identity { target: Target::Cpu, fields });
        a.add("one", vec![1, 2, 3]);
        a.add("two", vec![9; 100]);
        a
    }

    fn bytes(a: &Artifact) -> Vec<u8> {
        let dir = std::env::temp_dir().join(format!("dino-artifact-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let p = dir.join("a.dart");
        a.write(&p).unwrap();
        let b = std::fs::read(&p).unwrap();
        let back = Artifact::read(&p).unwrap();
        assert_eq!(back.identity, a.identity);
        assert_eq!(back.section("two").unwrap(), &[9; 100][..]);
        std::fs::remove_dir_all(&dir).unwrap();
        b
    }

    #[test]
    fn damaged_files_are_named_for_what_is_wrong() {
        let b = bytes(&sample());
        let p = Path::new("x.dart");
        let err = |b: &[u8]| Artifact::parse(b, p).err().map(|e| e.to_string()).unwrap_or_default();
        assert!(err(b"hello").contains("not a dino artifact"));
        assert!(err(&b[..b.len() - 10]).contains("truncated"), "{}", err(&b[..b.len() - 10]));
        assert!(err(&b[..20]).contains("truncated"));
        let mut longer = b.clone();
        longer.push(0);
        assert!(err(&longer).contains("1 bytes after"));
        let mut flipped = b.clone();
        *flipped.last_mut().unwrap() ^= 1;
        assert!(err(&flipped).contains("section `two` fails its checksum"));
        let mut head = b.clone();
        head[20] ^= 1;
        assert!(err(&head).contains("header's checksum"));
        assert!(err(&b).is_empty());
    }

    #[test]
    fn a_mismatch_names_the_field_and_both_values() {
        let a = sample();
        let mut asked = a.identity.clone();
        asked.fields.insert("batch".into(), serde_json::json!(16));
        let e = a.require(&asked).unwrap_err().to_string();
        assert!(e.contains("batch") && e.contains("8") && e.contains("16"), "{e}");
        asked.target = Target::Cuda { arch: "sm_90".into() };
        let e = a.require(&asked).unwrap_err().to_string();
        assert!(e.contains("target") && e.contains("cuda sm_90") && e.contains("cpu"), "{e}");
        let mut other = sample();
        other.program = "dino-runtime 0.0.9".into();
        let e = other.require(&a.identity).unwrap_err().to_string();
        assert!(e.contains("program version") && e.contains("0.0.9"), "{e}");
        assert!(a.require(&a.identity).is_ok());
        assert!(a.section("three").unwrap_err().to_string().contains("one, two"));
    }
}
