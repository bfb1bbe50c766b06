"""Teaching-sized solutions, one module per exercise: what ``show_solution`` shows.

Each is 20-40 lines written for reading, with the names the notebook's exercise cell uses, and
passes its checker (tests/test_teaching_solutions.py). The package's production modules solve
the same problems with more checks and options; ``show_solution`` names them as further reading.
"""
