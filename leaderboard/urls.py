from django.urls import path

from leaderboard import views

app_name = "leaderboard"

urlpatterns = [
    path("leaderboard/", views.index, name="index"),
    path("leaderboard.json", views.board_json, name="json"),
    path("leaderboard.csv", views.board_csv, name="csv"),
    path("leaderboard/m/<slug:slug>/", views.model_detail, name="model"),
    path("leaderboard/transparency/", views.transparency, name="transparency"),
    path("leaderboard/transparency.json", views.transparency_json, name="transparency_json"),
]
