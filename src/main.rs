fn main() -> std::process::ExitCode {
    pipepay::cli::run()
}
