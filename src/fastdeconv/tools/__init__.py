"""fastdeconv's tools: the ``compare`` benchmark, the roofline measurement, the warm-up and the command line.

They sit above the library (they import it; nothing in the library imports them), so ``import fastdeconv`` and
a call never load them or what they set up (torch, TensorFlow, JAX, matplotlib, process pools).
"""
