use clap::Parser;

fn main() {
    // A bug must still end as "internal failure" (exit 1) with one line,
    // also under panic = "abort", never as a signal udevd has to interpret.
    std::panic::set_hook(Box::new(|info| {
        eprintln!("hotplug-hook: internal error: {info}");
        std::process::exit(hotplug_hook::error::EXIT_FAILURE);
    }));
    let args = hotplug_hook::cli::effective_args(std::env::args_os().collect());
    let cli = hotplug_hook::cli::Cli::parse_from(args);
    let code = match hotplug_hook::run(cli) {
        Ok(code) => code,
        Err(err) => {
            eprintln!("hotplug-hook: {err:#}");
            if !hotplug_hook::log::to_stderr() {
                hotplug_hook::log::error(&format!("{err:#}"));
            }
            hotplug_hook::error::exit_code(&err)
        }
    };
    std::process::exit(code);
}
