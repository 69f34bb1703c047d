//! A subscriber's gathered parts (`src/delivery/gather.rs`): the usual batch holds one
//! message (and maybe its padding), kept inline so gathering allocates nothing per subscriber
//! then; later messages spill into a vector.

/// One to many values, the first two inline.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Parts<T> {
    One(T),
    Two([T; 2]),
    Many(Vec<T>),
}

impl<T: Clone> Parts<T> {
    /// The parts of `p` (one, two, or any other number, none included).
    pub fn new(p: &[T]) -> Parts<T> {
        match p {
            [a] => Parts::One(a.clone()),
            [a, b] => Parts::Two([a.clone(), b.clone()]),
            _ => Parts::Many(p.to_vec()),
        }
    }

    /// Appends `p` (spilling into a vector).
    pub fn push(&mut self, p: &[T]) {
        let mut v = match std::mem::replace(self, Parts::Many(Vec::new())) {
            Parts::One(a) => vec![a],
            Parts::Two([a, b]) => vec![a, b],
            Parts::Many(v) => v,
        };
        v.extend(p.iter().cloned());
        *self = Parts::Many(v);
    }

    /// Every part, in order.
    pub fn as_slice(&self) -> &[T] {
        match self {
            Parts::One(a) => std::slice::from_ref(a),
            Parts::Two(a) => a,
            Parts::Many(v) => v,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_and_two_stay_inline_and_more_spill_in_order() {
        let one = Parts::new(&[1]);
        assert_eq!(one, Parts::One(1));
        assert_eq!(one.as_slice(), &[1]);
        let two = Parts::new(&[1, 2]);
        assert_eq!(two, Parts::Two([1, 2]));
        assert_eq!(two.as_slice(), &[1, 2]);
        let mut p = Parts::new(&[1]);
        p.push(&[2, 3]);
        p.push(&[]);
        p.push(&[4]);
        assert_eq!(p.as_slice(), &[1, 2, 3, 4]);
        assert!(matches!(p, Parts::Many(_)));
    }

    #[test]
    fn none_and_many_at_once() {
        let none: Parts<u8> = Parts::new(&[]);
        assert!(none.as_slice().is_empty());
        let mut many = Parts::new(&[1, 2, 3]);
        assert_eq!(many.as_slice(), &[1, 2, 3]);
        many.push(&[4, 5]);
        assert_eq!(many.as_slice(), &[1, 2, 3, 4, 5]);
    }
}
