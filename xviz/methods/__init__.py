"""What xviz computes from the model, one method per module: Captum attributions
(``attribution``) and how far to trust them (``faithfulness``), Grad-CAM of every block
(``gradcam``), ablations, how one value is made (``trace``), feature visualization
(``featurevis``), the cost of separable convolutions (``cost``) and the dataset atlas
(``atlas``)."""
