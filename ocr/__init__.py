"""Pure, synchronous OCR building blocks.

Everything in this package is a plain function over numpy arrays: no threads, no event
loop, no device. The actors call these from worker threads; the tests call them directly.
"""
