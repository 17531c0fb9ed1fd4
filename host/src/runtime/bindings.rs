//! The host's bindings of the `sundial:job` WIT package, generated once here.
//! Generated types never leave `runtime/`: they are converted to the domain
//! types of [`crate::model`] at the edge.

wasmtime::component::bindgen!({
    path: "../wit",
    world: "sundial:job/job@0.1.0",
    // Host calls may trap the guest (cancellation, deadline, host failure).
    imports: { default: trappable },
});

pub use self::sundial::job::types;
