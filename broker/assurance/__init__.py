"""The privacy assurance report: what attacks on released data achieve, measured on a population
grown from the reference fleet's load model (``broker privacy report``)."""
