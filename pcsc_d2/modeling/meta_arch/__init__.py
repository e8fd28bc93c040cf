from .two_stream_rcnn import PCSCTwoStreamRCNN

__all__ = ["PCSCTwoStreamRCNN"]
