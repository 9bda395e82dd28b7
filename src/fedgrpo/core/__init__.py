"""The paper's maths as pure numpy functions: confidence graph, expert selection, advantages."""
