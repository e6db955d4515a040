"""From a trained model to what is submitted: `tta` (named views and their sets), `postprocess` (mask clean-up),
`probabilities` (the kept test probabilities, `test_probs.npz`), `ensemble` (averaging runs) and `codabench`
(the cells challenge's `submission.zip`).
"""
