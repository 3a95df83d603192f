"""Passes on Inductor's post-grad graph, run inside every engine build; the order lives in
`pipeline.POST_GRAD_PASSES`."""
