//! The `with` protocol shared by the closable framebus objects (pools, channel
//! ends, grabbers, captures): `__enter__` returns the object, `__exit__` closes
//! it and lets any exception propagate. One definition instead of one per class.

/// Implement `__enter__`/`__exit__` for `$ty`, calling `self.$close(py)` on exit.
/// `$close` must take `(&self, Python<'_>)` and return `()`.
macro_rules! closes_on_exit {
    ($ty:ty, $close:ident) => {
        #[pyo3::pymethods]
        impl $ty {
            fn __enter__(slf: pyo3::Py<Self>) -> pyo3::Py<Self> {
                slf
            }

            #[pyo3(signature = (*_exc))]
            fn __exit__(
                &self,
                py: pyo3::Python<'_>,
                _exc: &pyo3::Bound<'_, pyo3::types::PyTuple>,
            ) -> bool {
                self.$close(py);
                false
            }
        }
    };
}

pub(crate) use closes_on_exit;
