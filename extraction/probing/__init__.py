"""What corruption does to a probe: labelled data, each strategy's features, the seeded fit,
the layer sweep, its t-interval and the sentences a sweep ends in.
"""
