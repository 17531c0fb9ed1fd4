//! The `sundial` binary: a thin shell over the library's CLI.

fn main() -> std::process::ExitCode {
    sundial::cli::main()
}
