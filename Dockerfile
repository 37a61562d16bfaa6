FROM python:3.11-slim
WORKDIR /app
COPY pyproject.toml README.md ./
COPY api api
COPY workers workers
COPY guard guard
COPY compiler compiler
COPY shared shared
COPY warden warden
COPY bench bench
COPY Procfile ./
RUN pip install --no-cache-dir .
RUN mkdir -p /tmp/prometheus
EXPOSE 8000
CMD ["gunicorn", "-c", "api/gunicorn_conf.py", "api.app:create_app()"]
