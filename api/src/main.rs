fn main() -> std::process::ExitCode {
    gptimage2::cli::main()
}
