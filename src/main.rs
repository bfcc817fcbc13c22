use clap::Parser;

fn main() {
    let args = hotplug_hook::cli::effective_args(std::env::args_os().collect());
    let cli = hotplug_hook::cli::Cli::parse_from(args);
    let code = match hotplug_hook::cli::run(cli) {
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
