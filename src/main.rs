use clap::Parser;
use hotplug_hook::error::{ExitCode, exit_code};

/// Thin: parse, run, print an error once, exit with a documented code.
fn main() -> std::process::ExitCode {
    // A bug must still end as "internal failure" (exit 1) with one line,
    // also under panic = "abort", never as a signal udevd has to interpret.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("hotplug-hook: internal error: {info}");
        std::process::exit(ExitCode::Failure as i32);
    }));
    let args = hotplug_hook::cli::effective_args(std::env::args_os().collect());
    let cli = hotplug_hook::cli::Cli::parse_from(args);
    match hotplug_hook::run(cli) {
        Ok(code) => code.into(),
        Err(err) => {
            eprintln!("hotplug-hook: {err:#}");
            if !hotplug_hook::log::to_stderr() {
                hotplug_hook::log::error(&format!("{err:#}"));
            }
            exit_code(&err).into()
        }
    }
}
