use clap::Parser;

fn main() {
    let cli = dino::cli::Cli::parse();
    // Building and differentiating a ViT-S/B training graph recurses deeper than the main
    // thread's default stack (8 MB, less on some systems): run on a thread with room to spare.
    let run = std::thread::Builder::new()
        .name("dino".into())
        .stack_size(256 << 20)
        .spawn(move || dino::cli::run(cli))
        .expect("spawn the main thread");
    match run.join() {
        Ok(Ok(())) => {}
        Ok(Err(e)) => {
            eprintln!("error: {e}");
            std::process::exit(1);
        }
        Err(_) => std::process::exit(101), // the panic message is already printed
    }
}
