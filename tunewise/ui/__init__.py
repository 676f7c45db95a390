"""The local web dashboard (`tunewise ui`): runs, live curves, compare, playground, new runs."""
