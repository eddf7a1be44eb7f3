//! Events: the versioned envelope, and streams of them over SSE.

pub mod stream;
