//! Candle's backward as we build it (vendor/candle-core): the first gradient reaching a
//! node is stored as it is, later ones are added. These are the cases that change could
//! get wrong: fan-in, a shared gradient (both sides of an add), broadcasts, sums, and a
//! stored gradient that must not alias anything the optimizer writes.

use candle_core::{Device, Tensor, Var};

fn values(t: &Tensor) -> Vec<f32> {
    t.flatten_all().unwrap().to_vec1().unwrap()
}

#[test]
fn fan_in_sums_every_path_and_a_single_consumer_passes_its_gradient_through() {
    let x = Var::new(&[1f32, -2., 3.], &Device::Cpu).unwrap();
    // x reaches the loss through three paths: 2x, x*x and x itself.
    let loss = ((x.as_tensor() * 2.).unwrap() + x.as_tensor().sqr().unwrap()).unwrap();
    let loss = (loss + x.as_tensor()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    // d/dx (2x + x^2 + x) = 3 + 2x
    assert_eq!(values(grads.get(&x).unwrap()), vec![5., -1., 9.]);
}

#[test]
fn both_sides_of_an_add_get_the_same_gradient_and_later_sums_do_not_change_it() {
    let a = Var::new(&[[1f32, 2.], [3., 4.]], &Device::Cpu).unwrap();
    let b = Var::new(&[[0.5f32, 0.5], [0.5, 0.5]], &Device::Cpu).unwrap();
    let s = (a.as_tensor() + b.as_tensor()).unwrap();
    // a also feeds a second product, so its gradient is a sum and b's is not.
    let loss = ((&s * 3.).unwrap() + (a.as_tensor() * b.as_tensor()).unwrap()).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    assert_eq!(values(grads.get(&a).unwrap()), vec![3.5, 3.5, 3.5, 3.5]);
    assert_eq!(values(grads.get(&b).unwrap()), vec![4., 5., 6., 7.]);
}

#[test]
fn broadcast_and_mean_gradients_come_back_contiguous_in_the_argument_shape() {
    let bias = Var::new(&[1f32, 2., 3.], &Device::Cpu).unwrap();
    let x = Tensor::arange(0f32, 6., &Device::Cpu).unwrap().reshape((2, 3)).unwrap();
    let y = x.broadcast_add(bias.as_tensor()).unwrap();
    let loss = y.mean_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(&bias).unwrap();
    assert_eq!(g.dims(), &[3]);
    assert!(g.is_contiguous());
    assert_eq!(values(g), vec![2. / 6.; 3]);
}

#[test]
fn updating_a_variable_in_place_leaves_its_stored_gradient_alone() {
    let w = Var::new(&[1f32, 2.], &Device::Cpu).unwrap();
    let loss = (w.as_tensor() * 4.).unwrap().sum_all().unwrap();
    let grads = loss.backward().unwrap();
    let g = grads.get(&w).unwrap().clone();
    w.set(&Tensor::new(&[10f32, 20.], &Device::Cpu).unwrap()).unwrap();
    assert_eq!(values(&g), vec![4., 4.]);
}
