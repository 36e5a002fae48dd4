"""The run folder, the contract between a run and everything after it.

    folder.py     RunFolder: writes metrics, summary, weights, checkpoint and figures, atomically
    card.py       model.json, what inference needs to rebuild the model
    catalogue.py  the saved runs: finding, listing, choosing and loading them
    lock.py       one process per run folder
    resume.py     resuming a run in its folder: its overrides, what may change, its checkpoint
    requeue.py    a job started again in its folder continues the run there
    sweep.py      a grid sweep continued in its folder, and the refusal of another sweep there

Every file name in a run folder, and summary.json's statuses, are src/contract.py's (the ground
floor). Nothing here does training maths.
"""
