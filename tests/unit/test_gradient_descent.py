"""Gradient descent three ways gives one answer; forgetting to zero the gradient does not."""
import numpy as np
import pytest

from nnlab.lessons.gradient_descent import (accumulated_gradient, gd_autograd, gd_numpy, gd_sgd, initial_weights,
                                          log_loss, make_data)


@pytest.fixture(scope="module")
def data():
    return make_data(n=200, seed=0)


def test_hand_derived_gradient_step_equals_autograd_step(data):
    x, y = data
    assert np.allclose(gd_numpy(x, y, lr=0.5, steps=1), gd_autograd(x, y, lr=0.5, steps=1), rtol=0, atol=1e-12)


def test_numpy_autograd_and_plain_sgd_take_the_same_steps(data):
    x, y = data
    by_hand = gd_numpy(x, y, lr=0.5, steps=100)
    assert np.allclose(by_hand, gd_autograd(x, y, lr=0.5, steps=100), rtol=0, atol=1e-10)
    assert np.allclose(by_hand, gd_sgd(x, y, lr=0.5, steps=100, momentum=0.0), rtol=0, atol=1e-10)


def test_three_ways_reach_the_same_weights(data):
    x, y = data
    # 400 full-batch steps at lr 1 reach the minimum to float64 precision on this data.
    by_hand = gd_numpy(x, y, lr=1.0, steps=400)
    autograd = gd_autograd(x, y, lr=1.0, steps=400)
    momentum = gd_sgd(x, y, lr=1.0, steps=400, momentum=0.9)
    assert np.allclose(by_hand, autograd, rtol=0, atol=1e-10)
    assert np.allclose(by_hand, momentum, rtol=0, atol=1e-8)
    start = initial_weights(x.shape[1], seed=0)
    assert log_loss(by_hand, x, y) < 0.7 * log_loss(start, x, y)
    # Learned something real: both features point towards class 1, as the data was generated.
    assert by_hand[0] > 0.5 and by_hand[1] > 0.2


def test_momentum_takes_a_different_path_to_that_minimum(data):
    x, y = data
    assert not np.allclose(gd_sgd(x, y, steps=20, momentum=0.9), gd_numpy(x, y, steps=20), atol=1e-3)


def test_backward_without_zeroing_accumulates_the_gradient(data):
    x, y = data
    once = accumulated_gradient(x, y, backward_calls=1)
    assert np.abs(once).max() > 1e-3
    assert np.allclose(accumulated_gradient(x, y, backward_calls=3), 3 * once, rtol=1e-12, atol=0)


def test_forgetting_to_zero_the_gradient_gives_other_weights(data):
    x, y = data
    right = gd_autograd(x, y, lr=0.5, steps=100)
    wrong = gd_autograd(x, y, lr=0.5, steps=100, zero_grad=False)
    assert not np.allclose(right, wrong, atol=1e-2)
    assert log_loss(wrong, x, y) > log_loss(right, x, y)
