// The batched writer allocates heavily from several threads: with glibc malloc that cost
// ~30% of CPU samples and ~90 MB of fragmented arenas under load (see bench/README.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    one_c_malloc_arena();
    messaging_server::cli::main()
}

/// SQLite is C and allocates through glibc malloc, which gives each connection thread an
/// arena of its own; under load those arenas held ~70 MB more at peak than one shared
/// arena does, for no measurable throughput (only one connection writes at a time).
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn one_c_malloc_arena() {
    // SAFETY: called first thing in main, before any thread exists; mallopt only sets a
    // tuning parameter of the C allocator.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 1);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn one_c_malloc_arena() {}
