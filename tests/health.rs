//! The collapse monitor on real runs: the logs of four short fmnist-small runs
//! (`scripts/health-fixtures.sh` writes them: the preset as it is, no centering with a sharp
//! teacher, a teacher temperature of 1, a learning rate of 0) each raise the symptom the
//! paper predicts and nothing else, with the default thresholds; and the trainer end to end:
//! a collapsing run logs the alert once, also across a resume, and the diagnostics are drawn.
use std::path::{Path, PathBuf};

use dino::train::health::{Monitor, Symptom, Thresholds};
use dino::train::log::{self, Record};
use dino::train::{train_model, Hyper, TrainOptions};

mod common;
use common::mini::{subset_options, MiniDino};

/// The symptoms (and the iterations) the default monitor raises on a fixture log.
fn raised(name: &str) -> Vec<(Symptom, usize)> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("tests/fixtures/health").join(format!("{name}.jsonl"));
    let records = log::read(&path).unwrap_or_else(|e| panic!("{e} (regenerate with scripts/health-fixtures.sh)"));
    let mut m = Monitor::new(Thresholds::default());
    let mut steps = 0;
    let mut out = vec![];
    for r in records {
        if let Record::Step(s) = r {
            steps += 1;
            out.extend(m.observe(&s).map(|a| (a.symptom, a.iteration)));
        }
    }
    assert_eq!(steps, 300, "{name}: a step record per iteration");
    eprintln!("{name}: raised {out:?}");
    out
}

#[test]
fn the_preset_as_it_is_raises_nothing() {
    assert_eq!(raised("healthy"), []);
}

#[test]
fn a_teacher_at_temperature_one_collapses_to_uniform() {
    let r = raised("uniform");
    assert_eq!(r.iter().map(|a| a.0).collect::<Vec<_>>(), [Symptom::UniformCollapse], "{r:?}");
    assert!(r[0].1 < 150, "raised early: {r:?}");
}

#[test]
fn no_centering_with_a_sharp_teacher_collapses_to_one_dimension() {
    let r = raised("one-dimension");
    assert_eq!(r.iter().map(|a| a.0).collect::<Vec<_>>(), [Symptom::OneDimensionCollapse], "{r:?}");
}

#[test]
fn a_learning_rate_of_zero_stalls() {
    let r = raised("stalled");
    assert_eq!(r, [(Symptom::Stalled, Thresholds::default().stall_after)]);
}

fn options(out: &Path, hyper: Hyper, stop_after: Option<usize>, resume: bool) -> TrainOptions {
    let mut o = subset_options("mini", out, 1);
    (o.run.hyper, o.run.save_every, o.stop_after, o.resume) = (hyper, 0, stop_after, resume);
    o
}

#[test]
fn a_collapsing_run_says_so_once_across_a_resume_and_draws_it() {
    let out = common::Scratch::unmade("health");
    // 4 epochs of the 512-image subset at batch 16: 128 iterations, a teacher at temperature 1
    let hyper =
        Hyper { epochs: Some(4), teacher_temp: Some(1.0), warmup_teacher_temp: Some(1.0), ..Default::default() };
    let first = train_model::<MiniDino>(&options(&out, hyper.clone(), Some(110), false)).unwrap();
    assert_eq!(first.alerts.iter().map(|a| a.symptom).collect::<Vec<_>>(), [Symptom::UniformCollapse]);
    assert!(first.alerts[0].iteration < 110);
    let rest = train_model::<MiniDino>(&options(&out, hyper, None, true)).unwrap();
    assert_eq!(rest.iterations, 128);
    assert!(rest.alerts.is_empty(), "raised again after the resume: {:?}", rest.alerts);
    let records = log::read(&out.join("log.jsonl")).unwrap();
    let health: Vec<_> =
        records.iter().filter_map(|r| if let Record::Health(a) = r { Some(a) } else { None }).collect();
    assert_eq!(health.len(), 1, "one health record in the log");
    assert_eq!(health[0], &first.alerts[0]);
    assert!(health[0].advice.iter().any(|a| a.contains("--teacher-temp")));
    // drawn after each epoch, and again by `dino plot`'s function
    let png = image::open(out.join("diagnostics.png")).unwrap();
    assert_eq!((png.width(), png.height()), (960, 920));
    let again = out.join("again.png");
    dino::plot::diagnostics_plot(&again, &records, "mini").unwrap();
    assert!(again.is_file());
}
