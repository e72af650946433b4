"""curvlens.optim"""
