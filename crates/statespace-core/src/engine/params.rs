//! The parameter store: every trainable tensor by name, with its gradient and optimizer group.
//!
//! Names are dotted paths (`encoder.weight`, `blocks.0.ssm.log_dt`, …); shapes are row-major. The
//! optimizer, the checkpoints and the CLI all address parameters through this store; the names,
//! shapes and parameterizations are documented in `docs/checkpoint-format.md`.

use crate::engine::float::Float;

/// Which optimizer group a parameter belongs to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ParamKind {
    /// A weight matrix or embedding (global lr, global weight decay).
    Weight,
    /// A bias, a norm scale/shift or a skip gain (global lr, no weight decay).
    NoDecay,
    /// SSM state matrix `A` (its real and imaginary parameterization).
    SsmA,
    /// SSM input matrix `B`.
    SsmB,
    /// SSM step size `log Δ`.
    SsmDt,
}

/// Index of a parameter in its store.
pub type ParamId = usize;

/// One named tensor with its gradient.
#[derive(Debug, Clone)]
pub struct Param<T> {
    /// Dotted name, unique in the store.
    pub name: String,
    /// Row-major shape.
    pub shape: Vec<usize>,
    /// Values.
    pub value: Vec<T>,
    /// Accumulated gradient (same length as `value`).
    pub grad: Vec<T>,
    /// Optimizer group.
    pub kind: ParamKind,
}

/// All parameters of a model.
#[derive(Debug, Clone, Default)]
pub struct ParamStore<T> {
    /// The parameters, in registration order.
    pub params: Vec<Param<T>>,
}

impl<T: Float> ParamStore<T> {
    /// An empty store.
    pub fn new() -> Self {
        Self { params: Vec::new() }
    }

    /// Registers a parameter with initial `value`; panics on a duplicate name or a wrong length
    /// (both programming errors of the model builder, not user input).
    pub fn add(
        &mut self,
        name: impl Into<String>,
        shape: &[usize],
        value: Vec<T>,
        kind: ParamKind,
    ) -> ParamId {
        let name = name.into();
        assert!(
            self.params.iter().all(|p| p.name != name),
            "duplicate parameter name {name}"
        );
        assert_eq!(
            value.len(),
            shape.iter().product::<usize>(),
            "parameter {name}: value length vs shape"
        );
        let n = value.len();
        self.params.push(Param {
            name,
            shape: shape.to_vec(),
            value,
            grad: vec![T::zero(); n],
            kind,
        });
        self.params.len() - 1
    }

    /// Registers a complex tensor as two real ones, `{name}_re` and `{name}_im` (the checkpoint
    /// convention: no trailing dimension of 2), from f64 values.
    pub fn add_complex(
        &mut self,
        name: &str,
        shape: &[usize],
        values: &[num_complex::Complex64],
        kind: ParamKind,
    ) -> (ParamId, ParamId) {
        let re = values.iter().map(|z| T::of(z.re)).collect();
        let im = values.iter().map(|z| T::of(z.im)).collect();
        (
            self.add(format!("{name}_re"), shape, re, kind),
            self.add(format!("{name}_im"), shape, im, kind),
        )
    }

    /// The values of parameter `id`.
    #[inline]
    pub fn value(&self, id: ParamId) -> &[T] {
        &self.params[id].value
    }

    /// The gradient of parameter `id`.
    #[inline]
    pub fn grad_mut(&mut self, id: ParamId) -> &mut [T] {
        &mut self.params[id].grad
    }

    /// Values of `id` together with the gradient of `id` (for layers that read and accumulate).
    #[inline]
    pub fn value_and_grad(&mut self, id: ParamId) -> (&[T], &mut [T]) {
        let p = &mut self.params[id];
        (&p.value, &mut p.grad)
    }

    /// Sets every gradient to zero.
    pub fn zero_grad(&mut self) {
        for p in &mut self.params {
            p.grad.iter_mut().for_each(|g| *g = T::zero());
        }
    }

    /// Looks a parameter up by name.
    pub fn find(&self, name: &str) -> Option<ParamId> {
        self.params.iter().position(|p| p.name == name)
    }

    /// Total number of scalar parameters.
    pub fn count(&self) -> usize {
        self.params.iter().map(|p| p.value.len()).sum()
    }

    /// Global L2 norm of the gradients.
    pub fn grad_norm(&self) -> f64 {
        self.params
            .iter()
            .flat_map(|p| p.grad.iter())
            .map(|g| g.f64() * g.f64())
            .sum::<f64>()
            .sqrt()
    }
}
