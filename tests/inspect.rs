//! `dino inspect`: every stage drawn and summarized, the summaries consistent with what each
//! pass does, groups per block, and bad requests named.
mod common;
use common::Scratch;
use std::path::Path;

use common::big_stack;
use dino::inspect::{group_of_name, inspect, GraphKind, InspectOptions, StageSummary};
use dino::runtime::backend::Passes;

fn out_dir(name: &str) -> Scratch {
    Scratch::unmade(&format!("inspect-{name}"))
}

/// Graphviz renders when installed; CI installs it and sets DINO_REQUIRE_GRAPHVIZ=1.
fn render() -> bool {
    let have = std::process::Command::new("dot").arg("-V").output().is_ok_and(|o| o.status.success());
    assert!(
        have || std::env::var("DINO_REQUIRE_GRAPHVIZ").is_err(),
        "DINO_REQUIRE_GRAPHVIZ is set but `dot` cannot run"
    );
    have
}

fn run(
    model: &str,
    graph: GraphKind,
    expand: &[String],
    out: &Path,
    render: bool,
) -> dino::runtime::Result<Vec<StageSummary>> {
    let o = InspectOptions { model, graph, batch: 2, passes: Passes::standard(), out, expand, render };
    inspect(&o, &mut |_| {})
}

#[test]
fn a_train_step_is_drawn_and_summarized_after_every_pass() {
    big_stack(|| {
        let out = out_dir("step");
        let render = render();
        let stages = run("fmnist-small", GraphKind::TrainStep, &["backbone.patch_embed".to_string()], &out, render)
            .expect("inspect");
        let names: Vec<&str> = stages.iter().map(|s| s.stage.as_str()).collect();
        assert_eq!(names, ["built", "dead-code", "cse", "gemm", "fusion", "row-fusion"]);
        let (built, last) = (&stages[0], &stages[5]);
        // the passes keep the work and shrink the graph, the schedule and the traffic
        assert!(last.nodes * 3 < built.nodes, "{} -> {}", built.nodes, last.nodes);
        assert!((last.flops - built.flops).abs() <= 0.01 * built.flops, "{} vs {} FLOPs", built.flops, last.flops);
        assert!(last.arena_bytes.unwrap() < built.arena_bytes.unwrap());
        assert!(last.bytes_moved.unwrap() * 10.0 < built.bytes_moved.unwrap());
        assert!(built.contractions.is_empty() && !stages[3].contractions.is_empty(), "GEMMs appear with the gemm pass");
        assert!(stages[3].fused.is_none() && last.fused.is_some_and(|f| f.3 > f.1), "fused kernels of several sizes");
        assert!(last.by_kind.iter().any(|(k, _)| k == "Fused") && last.by_kind.iter().any(|(k, _)| k == "Gemm"));
        for s in &stages {
            assert!(s.groups >= 12, "{}: {} groups", s.stage, s.groups);
            let expect = if render { 6 } else { 2 };
            assert_eq!(s.files.len(), expect, "{}: {:?}", s.stage, s.files);
            for f in &s.files {
                assert!(std::fs::metadata(f).unwrap().len() > 100, "{f:?}");
            }
        }
        let collapsed = std::fs::read_to_string(out.join("05-row-fusion.dot")).unwrap();
        for g in ["backbone.blocks.0", "backbone.blocks.5", "teacher.backbone.blocks.0", "head.mlp", "optim.default"] {
            assert!(collapsed.contains(&format!("\"{g}\" [label")), "{g} missing:\n{collapsed}");
        }
        let block = std::fs::read_to_string(out.join("05-row-fusion.backbone.patch_embed.dot")).unwrap();
        assert!(block.contains("Gemm") && block.contains("style=dashed"), "{block}");
        if render {
            let png = std::fs::read(out.join("05-row-fusion.png")).unwrap();
            assert_eq!(&png[..4], b"\x89PNG");
        }
    });
}

#[test]
fn a_forward_graph_and_bad_requests() {
    big_stack(|| {
        let out = out_dir("fwd");
        let stages = run("vit-tiny-16", GraphKind::Forward, &[], &out, false).expect("inspect");
        assert_eq!(stages.len(), 6);
        assert!(stages[5].groups >= 12, "12 blocks and more: {}", stages[5].groups);
        let e = run("vit-tiny-16", GraphKind::TrainStep, &[], &out, false).unwrap_err().to_string();
        assert!(e.contains("vit-tiny-16") && e.contains("fmnist-small"), "{e}");
        let e = run("fmnist-tiny", GraphKind::Forward, &["no.such.group".to_string()], &out, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("no.such.group"), "{e}");
    });
}

#[test]
fn parameter_names_give_their_block() {
    assert_eq!(group_of_name("backbone.blocks.3.attn.qkv.weight"), "backbone.blocks.3");
    assert_eq!(group_of_name("teacher.backbone.blocks.11.mlp.fc1.bias"), "teacher.backbone.blocks.11");
    assert_eq!(group_of_name("head.mlp.0.weight"), "head.mlp");
    assert_eq!(group_of_name("center Load"), "center");
    assert_eq!(group_of_name("cls_token"), "cls_token");
}
