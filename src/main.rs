fn main() -> std::process::ExitCode {
    messaging_server::cli::main()
}
