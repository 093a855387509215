"""The views of the Training panel (:class:`nbseg.ui.training_panel.TrainingPanel` composes
them): :mod:`.graph` (loss graph, checkpoint markers, epoch marker), :mod:`.table` (List tab,
CSV export), :mod:`.feedback` (visual feedback, epoch slider, PNG export), :mod:`.checkpoints`
(checkpoint cache actions); :mod:`.common` holds their small helpers.

Each view owns its widgets and draws what the composer hands it (rows, a feedback
prediction, a finished :class:`nbseg.TrainingResult`); none of them touches a training run.
"""
