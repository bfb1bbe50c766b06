"""Galleries of known mistakes, one module per step: the wrong code and the sentence naming it.

A checker compares a failing answer with its step's gallery (see
:class:`bevdistill.exercises._checking.Gallery`); the entries are what learners and the
tutorial this project corrects actually write.
"""
