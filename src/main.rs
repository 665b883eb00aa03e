// The batched writer allocates heavily from several threads: with glibc malloc that cost
// ~30% of CPU samples and ~90 MB of fragmented arenas under load (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    messaging_server::cli::main()
}
