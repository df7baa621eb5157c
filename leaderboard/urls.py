from django.urls import path

from leaderboard import views

app_name = "leaderboard"

urlpatterns = [
    path("leaderboard/", views.index, name="index"),
    path("leaderboard.json", views.board_json, name="json"),
    path("leaderboard.csv", views.board_csv, name="csv"),
    path("leaderboard/m/<slug:slug>/", views.model_detail, name="model"),
    path("leaderboard/me/", views.personal_board, name="personal"),
    path("leaderboard/me/share/", views.personal_share, name="share"),
    path("leaderboard/me/unshare/", views.personal_unshare, name="unshare"),
    path("leaderboard/shared/<str:token>/", views.personal_shared, name="shared"),
    path("leaderboard/transparency/", views.transparency, name="transparency"),
    path("leaderboard/transparency.json", views.transparency_json, name="transparency_json"),
]
