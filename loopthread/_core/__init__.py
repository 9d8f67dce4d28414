"""The loop thread itself: call hand-off, state, components, shutdown driver, executor.

Nothing in this package imports a component (channels, resources, enricher chains, the
monitor, metrics); they attach to a LoopThread through :mod:`loopthread._core._component`.
"""
