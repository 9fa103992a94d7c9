// glibc's malloc was a sixth of the ingress's CPU under load (arena locks, consolidating freed
// chunks between the handlers' threads and the writer's); mimalloc's per-thread heaps are not.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

fn main() -> std::process::ExitCode {
    pipepay::cli::run()
}
