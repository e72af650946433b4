"""curvlens.estimators"""
