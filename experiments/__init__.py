"""The five paper experiments, one declarative script each (:mod:`brats_keras.runner`).

Run one as a script (``python experiments/paper1_u_resunet.py``) or import it
(``from experiments import paper1_u_resunet; paper1_u_resunet.main([...])``) from the repository root.
"""
