"""Decide before you train: estimate memory, time and cost of each method (:mod:`tunewise.decide.estimate`) and
advise whether to fine-tune at all, and how (:mod:`tunewise.decide.advise`), from measurements on the user's own
data, model and hardware."""
