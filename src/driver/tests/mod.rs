//! The view's event loop over scripted sources and input, on a TestBackend.

mod replay;
mod run;
