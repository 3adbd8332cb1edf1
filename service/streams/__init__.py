"""The read side: following one generation's log, live and at a recorded pace.

``hub`` is who follows what in this process and the one read per generation per wake-up that
its followers share; ``follow`` turns that into one stream's pages (replay after a seq, then
live, each event exactly once); ``pacing`` replays a finished generation at the pace it was
recorded. No HTTP here: ``api/stream.py`` writes what these yield as Server-Sent Events, and
``operations/replay.py`` as JSON lines.
"""
