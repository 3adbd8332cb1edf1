"""What an operator does to the log outside HTTP: move generations between genstreams
(``transfer``), recompute the generation rows from their events (``rebuild``), print a
generation's events (``replay``). ``service/cli/`` is the thin command line on top of them."""
