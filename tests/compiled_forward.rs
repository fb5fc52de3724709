//! A backbone's forward pass compiled once (`dino compile --graph features|tokens|attention`)
//! gives exactly what the graph built at start gives, a smaller last batch padded; a file
//! compiled for another size, graph, epsilon or backbone, or a batch larger than it was
//! planned for, is refused naming what differs.
use std::path::PathBuf;

use dino::compiled::{compile_forward, load_forward, ForwardGraph};
use dino::dataset::{self, DataSpec};
use dino::eval::features::{random_backbone, Norm};
use dino::eval::{Output, VitRunner};
use dino::train::Device;
use dino_runtime::artifact::Target;
use dino_runtime::model::VitModel;

mod common;
use common::mini::MiniVit;

dino::vit! {
    /// Another backbone with MiniVit's patches (a file compiled for one is refused for it).
    pub OtherVit { image: 28, patch: 7, channels: 1, dim: 24, depth: 2, heads: 2, mlp: 48 }
}

fn artifact(name: &str) -> PathBuf {
    std::env::temp_dir().join(format!("dino-forward-{name}-{}.dart", std::process::id()))
}

const NORM: Norm<'static> = Norm { mean: &[0.2860], std: &[0.3530] };

/// Ten Fashion-MNIST images of the committed subset.
fn images() -> std::sync::Arc<dyn dino_runtime::data::Dataset> {
    let subset = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/fmnist-subset");
    dataset::open(&DataSpec::Fmnist(Some(subset)), 1, None, Some(10), Some(10)).unwrap().train
}

fn jit<V: VitModel>(output: Output) -> VitRunner<V> {
    let mut r = VitRunner::<V>::new(output, None, Device::Cpu).unwrap();
    r.set_weights(&random_backbone::<V>(5)).unwrap();
    r
}

fn compiled<V: VitModel>(graph: ForwardGraph, batch: usize, name: &str) -> VitRunner<V> {
    let path = artifact(name);
    let r = compile_forward::<V>(graph, None, batch, 28, Target::Cpu, &path).unwrap();
    assert!(r.kernels > 10 && r.bytes > 1000, "{r:?}");
    // building and compiling are timed apart (building a graph takes some time too)
    assert!(r.build_s > 0.0 && r.compile_s > 0.0 && r.plan_s > 0.0, "{r:?}");
    let mut run = load_forward::<V>(&path, graph, None, 28, Device::Cpu).unwrap();
    assert_eq!(run.fixed_batch(), Some(batch));
    run.set_weights(&random_backbone::<V>(5)).unwrap();
    let _ = std::fs::remove_file(&path);
    run
}

#[test]
fn compiled_features_and_tokens_equal_the_graph_built_at_start_with_a_padded_last_batch() {
    let ds = images();
    for (graph, output) in [(ForwardGraph::Features, Output::LastCls(1)), (ForwardGraph::Tokens, Output::Tokens)] {
        let want = jit::<MiniVit>(output).features(ds.as_ref(), 28, NORM, 256, |_, _| {}).unwrap();
        // batches of 4: 4 + 4 + 2 (padded to 4)
        let mut runner = compiled::<MiniVit>(graph, 4, graph.name());
        let mut batches = 0;
        let got = runner.features(ds.as_ref(), 28, NORM, 256, |_, _| batches += 1).unwrap();
        assert_eq!(batches, 3, "{graph:?}: run in the program's batches");
        assert_eq!((got.rows(), got.dim), (10, want.dim), "{graph:?}");
        assert_eq!(got.data, want.data, "{graph:?}: bit for bit");
        assert_eq!(got.labels, want.labels);
    }
}

#[test]
fn compiled_attention_equals_the_graph_built_at_start() {
    let ds = images();
    let xs: Vec<Vec<f32>> = (0..3)
        .map(|i| dino::eval::preprocess::normalize(&ds.load(i).unwrap().with_channels(1), NORM.mean, NORM.std))
        .collect();
    let want = jit::<MiniVit>(Output::Attention).run(&xs, 28, 28).unwrap();
    let mut runner = compiled::<MiniVit>(ForwardGraph::Attention, 8, "attention");
    assert_eq!(runner.run(&xs, 28, 28).unwrap(), want);
    // more images than the program's batch, or another size, is a clear error
    let nine = vec![xs[0].clone(); 9];
    let e = runner.run(&nine, 28, 28).unwrap_err().to_string();
    assert!(e.contains("up to 8 images of 28x28") && e.contains("not 9"), "{e}");
    let e = runner.run(&[vec![0.0; 14 * 14]], 14, 14).unwrap_err().to_string();
    assert!(e.contains("--size 14"), "{e}");
}

fn err_of<V: VitModel>(r: dino_runtime::Result<VitRunner<V>>) -> String {
    r.err().map(|e| e.to_string()).unwrap_or_default()
}

#[test]
fn a_forward_artifact_built_for_something_else_is_refused_by_name() {
    let path = artifact("mismatch");
    compile_forward::<MiniVit>(ForwardGraph::Features, None, 4, 28, Target::Cpu, &path).unwrap();
    let e = err_of(load_forward::<MiniVit>(&path, ForwardGraph::Features, None, 14, Device::Cpu));
    assert!(e.contains("image_size 28") && e.contains("asks for 14"), "{e}");
    let e = err_of(load_forward::<MiniVit>(&path, ForwardGraph::Attention, None, 28, Device::Cpu));
    assert!(e.contains("graph \"features\"") && e.contains("\"attention\""), "{e}");
    let e = err_of(load_forward::<MiniVit>(&path, ForwardGraph::Features, Some(1e-5), 28, Device::Cpu));
    assert!(e.contains("norm_eps"), "{e}");
    let e = err_of(load_forward::<OtherVit>(&path, ForwardGraph::Features, None, 28, Device::Cpu));
    assert!(e.contains("backbone"), "{e}");
    // a size that is no whole number of patches is refused when compiling
    let e = compile_forward::<MiniVit>(ForwardGraph::Features, None, 4, 30, Target::Cpu, &artifact("bad"))
        .unwrap_err()
        .to_string();
    assert!(e.contains("--size 30") && e.contains("multiple of 7"), "{e}");
    let _ = std::fs::remove_file(&path);
}

#[test]
fn start_up_of_a_compiled_forward_pass_computes_what_the_jit_one_does() {
    let path = artifact("startup");
    for graph in [ForwardGraph::Features, ForwardGraph::Attention] {
        let rows =
            dino::bench::startup::startup_forward::<MiniVit>(graph, 3, &path, 1, Device::Cpu, Target::Cpu).unwrap();
        assert_eq!(rows.iter().map(|r| r.how).collect::<Vec<_>>(), ["jit", "compiled"]);
        assert!(rows[0].check != 0.0 && rows[0].check.is_finite(), "{rows:?}");
        assert_eq!(rows[0].check, rows[1].check, "{graph:?}: the same outputs");
    }
    let _ = std::fs::remove_file(&path);
}
