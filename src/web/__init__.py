"""The web page (python app.py): the saved runs, one run's curves and figures, its model tried on
an image, runs compared, and the Train tab.

    workbench.py      what the page shows: plain functions and the Workbench, tested without a
                      browser, knowing nothing of Gradio
    page.py           the page's Gradio layout and events, and its server
    train_form.py     the Train tab's form turned into train.py's overrides, checked by allowlist
    allowlist.py      what the Train tab accepts: settings from configs/, kinds, ranges, folders
    train_control.py  the one train.py process the page starts, follows and stops
    train_tab.py      the Train tab's layout and events
    compare_tab.py    the Compare tab: runs picked side by side (src/report/compare.py's)

The page runs the real train.py; how training works inside is not its business.
"""
