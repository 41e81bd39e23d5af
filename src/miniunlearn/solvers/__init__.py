"""Numerical solvers shared by unlearning methods and experiments (no method registers here).

* :mod:`.lbfgs`: the bounded store of L-BFGS secant pairs and its two-loop product.
* :mod:`.retain_lbfgs`: the safeguarded, preconditioned L-BFGS contraction on a (tilted)
  retain objective, used by Mini-Unlearning and by the retain-optimum reference.
"""
