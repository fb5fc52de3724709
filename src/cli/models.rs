//! `dino models`: the model zoo.
use clap::Args;
use dino_models::{find, Preset, REGISTRY};

#[derive(Debug, Args)]
pub struct ModelsArgs {
    /// Print this preset's full declaration as JSON (default: list every preset).
    pub name: Option<String>,
}

fn millions(n: usize) -> String {
    format!("{:.2}M", n as f64 / 1e6)
}

pub fn run(args: ModelsArgs) -> Result<(), String> {
    if let Some(name) = args.name {
        let e = find(&name).ok_or_else(|| {
            let names: Vec<&str> = REGISTRY.iter().map(|e| e.name).collect();
            format!("no preset named `{name}`; the presets are: {}", names.join(", "))
        })?;
        let json = match e.preset {
            Preset::Backbone(c) => serde_json::to_string_pretty(&c),
            Preset::Dino(c) => serde_json::to_string_pretty(&c),
        };
        println!("{}", json.map_err(|e| e.to_string())?);
        return Ok(());
    }
    println!("{:<22} {:<9} {:>12} {:>10} {:>9}  {}", "name", "kind", "backbone", "head", "K", "crops / shape");
    for e in REGISTRY {
        match e.preset {
            Preset::Backbone(c) => println!(
                "{:<22} {:<9} {:>12} {:>10} {:>9}  {}x{}x{} patch {}, dim {}, depth {}, heads {} ({} params exactly)",
                e.name,
                "backbone",
                millions(c.num_params()),
                "-",
                "-",
                c.image,
                c.image,
                c.channels,
                c.patch,
                c.dim,
                c.depth,
                c.heads,
                c.num_params()
            ),
            Preset::Dino(c) => {
                let local = c.local.map(|l| format!(" + {}x{}", l.count, l.size)).unwrap_or_default();
                // DINOv2's terms, where declared
                let mut terms = String::new();
                if let dino_runtime::config::Centering::SinkhornKnopp { iterations } = c.centering {
                    terms += &format!(", Sinkhorn-Knopp {iterations}");
                }
                if c.koleo > 0.0 {
                    terms += &format!(", KoLeo {}", c.koleo);
                }
                if let Some(i) = c.ibot {
                    terms += &format!(", iBOT {}{}", i.weight, if i.separate_head { " (own head)" } else { "" });
                }
                // and DINOv2's optimizer path
                if c.optimizer.layer_decay < 1.0 {
                    terms += &format!(", layer decay {}", c.optimizer.layer_decay);
                }
                if c.clip_scope == dino_runtime::config::ClipScope::Module {
                    terms += ", clip per module";
                }
                println!(
                    "{:<22} {:<9} {:>12} {:>10} {:>9}  {}x{}{local} on {}, head {}/{}, {} epochs of {}{terms}",
                    e.name,
                    "dino",
                    millions(c.backbone.num_params()),
                    millions(c.head.num_params(c.backbone.dim)),
                    c.head.out,
                    c.global.count,
                    c.global.size,
                    c.backbone.name,
                    c.head.hidden,
                    c.head.bottleneck,
                    c.epochs,
                    c.batch_size
                );
            }
        }
    }
    Ok(())
}
