use clap::Parser;

fn main() {
    let cli = hotplug_hook::cli::Cli::parse();
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
