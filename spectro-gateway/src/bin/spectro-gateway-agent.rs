//! The private cloud gateway agent: `spectro-gateway-agent --help`.

fn main() {
    let args: Vec<String> = std::env::args().collect();
    std::process::exit(spectro_gateway::agent::main_with_args(args));
}
